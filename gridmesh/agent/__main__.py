from gridmesh.agent.main import main

main()
