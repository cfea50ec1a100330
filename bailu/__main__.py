from bailu.cli import main

main()
