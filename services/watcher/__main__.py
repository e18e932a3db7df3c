from envstore.watcher.service import main

main()
