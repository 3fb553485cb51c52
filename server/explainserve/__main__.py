from explainserve.cli.main import main

raise SystemExit(main())
