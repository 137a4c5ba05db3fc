from tools.watcher.main import main

raise SystemExit(main())
