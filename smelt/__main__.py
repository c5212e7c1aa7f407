from smelt.cli import main

raise SystemExit(main())
