"""OS definitions per ganeti-os-interface(7): finding one, the scripts' environment, running them.

- lookup: find an OS definition by name in the OS search path (with the
  checks of os_diagnose), check variants and parameters;
- environment: the documented script environment (OS_*, OSP_*, INSTANCE_*,
  DISK_<n>_*, NIC_<n>_*, ...);
- scripts: running a script with that environment, its log file under
  $LOG_DIR/os and Ganeti's failure messages;
- package: the OS install package (definition + environment tarball).

The procedures using them are in noded.backends.os.
"""
