"""framewire discovery: Bonjour-style mDNS advertise/browse/resolve (a later issue)."""
