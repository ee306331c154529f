from tradeforge_cli.app import main

main()
