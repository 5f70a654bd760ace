"""djangoops: the engine of the djangoops.maintenance backup commands.

A standard-library Python package, run by the server's own python3 (3.11 on
Debian 12, 3.13 on Debian 13); nothing is installed with pip on servers. The
roles install it root-owned, where the project user cannot write it.
"""
