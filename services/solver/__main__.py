from envstore.solver.service import main

main()
