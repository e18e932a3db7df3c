from envstore.api.webhooks.service import main

main()
