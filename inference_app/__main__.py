from inference_app.cli import main

raise SystemExit(main())
