from envstore.packager.service import main

main()
