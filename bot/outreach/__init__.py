"""What CSO staff send residents: broadcasts, event reminders, campaign updates, answers.

Every message these produce is an outbox row; the dispatcher delivers them at the
platforms' pace, and the scheduler only decides when something becomes due.
"""
