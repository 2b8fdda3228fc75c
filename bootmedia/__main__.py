from bootmedia.cli import main

raise SystemExit(main())
