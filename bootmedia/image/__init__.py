"""An image's contents as files and block devices (bootmedia.image.view)."""
