from finopsd.cli import main

main()
