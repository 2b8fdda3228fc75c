"""Repositories on the network: SMB and NFS shares the kernel mounts, SSH through sshfs, and
read-only HTTP. See bootmedia.net.url for the URL forms and docs/NETWORK.md for the rules."""
