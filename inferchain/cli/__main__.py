from inferchain.cli import main

main()
