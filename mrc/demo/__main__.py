"""`python -m mrc.demo`: run the built-in demo."""

from mrc.demo.run import main

main()
