"""What flows speak in: messages, translations, languages and roles.

Nothing here touches the database, so flows import it without SQLAlchemy.
"""
