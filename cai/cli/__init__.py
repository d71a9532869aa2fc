"""The `cai` command line: one module per command group; `app.main` is the entry point."""
