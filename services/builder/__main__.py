from envstore.builder.service import main

main()
