"""One thin adapter per external tool the engine reads or writes with, on top of bootmedia.run:

blkid.probe(path, offset=, size=)     # `blkid -p -o export`, values unescaped; {} when nothing
sfdisk.read(device)                   # `sfdisk -J` -> the "partitiontable" dict, or None
sfdisk.write(device, script)          # the table, then the kernel told (partx.reread)
partx.reread(disk)                    # the kernel's partition nodes made to match the table
gpt.set_names(device, {1: "EFI"})     # GPT names written as the GPT holds them (UTF-16)
"""
