from gpuscale_gateway.cli import main

raise SystemExit(main())
