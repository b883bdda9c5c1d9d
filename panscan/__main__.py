from panscan.cli import main

raise SystemExit(main())
