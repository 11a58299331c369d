"""`python -m salt.demo` is `salt-demo-data`."""

from salt.demo import main

main()
