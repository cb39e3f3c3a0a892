from milkit.cli import main

main()
