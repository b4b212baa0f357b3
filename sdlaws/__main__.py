from sdlaws.cli import main

main()
