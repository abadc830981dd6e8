from gridmesh.controller.main import main

main()
