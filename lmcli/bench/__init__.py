"""`lmcli bench`: lmcli's own figures on the machine at hand."""
