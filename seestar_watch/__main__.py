from seestar_watch.cli import main

main()
