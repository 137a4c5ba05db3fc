"""Block devices of the node: the disk templates this node stores (file, sharedfile), the
diskless template, the instance disk links, and the device cache."""
