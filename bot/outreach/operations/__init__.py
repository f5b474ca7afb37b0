"""Everything staff do, one typed function per operation, whichever front end asks.

Each operation takes a `Request` (who asks, when, in which transaction) and a typed
input; it checks the actor's role against the one table (bot/vocabulary/roles.py),
validates the input, locks the rows it changes and enforces its state rules, and
returns a typed result or raises one of the typed errors of `errors.py`. The chat
(bot/engine/staff_actions.py), the CLI (bot/cli/outreach.py) and the coming web
console call these and render the result or the error their own way.

Modules by area: `broadcasts`, `events`, `campaigns`, `reports` (status, answers,
FAQ, stats), `exports`, `staff`; `checks` holds the validation they share, and
`request` the caller's side. Heavy work (export, notices to everyone registered,
campaign updates) is queued as a job (bot/outreach/jobs.py), outside the turn.
"""
