"""The `jingbao` subcommands (bridge/cli.py builds the one command line from them). They sit at the top with the
service's wiring: each reads the config and hands every package what it needs, so no package below imports another's
command line, or this one (tests/test_layers.py).

- `service`: run (every role), config check, segment, archive, db roles
- `transcribe`, `models`: speech recognition over files or the archive; the models and where they come from
- `dispatching`: extract, incidents, broker accounts and ACL, announce
- `radios`: PTT lines and channel patches of the running service
- `users`: web console accounts
"""
