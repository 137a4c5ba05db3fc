"""Our ganeti-watcher (a LUXI client of the master, like the gnt-* tools); see tools.watcher.main."""
