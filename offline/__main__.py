from offline.plan import main

raise SystemExit(main())
