import sys

if "--failover" in sys.argv[1:]:
    from tests.chaos.failover import main
else:
    from tests.chaos.run import main

raise SystemExit(main())
