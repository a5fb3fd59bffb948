"""Drop-in namespaces: ``ferrosmtp.compat.aiosmtpd`` and ``ferrosmtp.compat.aiosmtplib``
take the incumbents' names, constructor arguments, defaults, reply texts and exception
types over ferrosmtp's engine, so switching is one import line.

The incumbents' own test suites, run against these modules by
``tests/incumbents/run.py``, are the measure; the deliberate differences are listed in
README ("Switching from aiosmtpd / aiosmtplib") and SECURITY.md.
"""
