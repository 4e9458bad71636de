from tests.chaos.run import main

raise SystemExit(main())
