from relgate.cli import entry

entry()
