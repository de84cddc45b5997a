"""The one error type that means "the user's input or machine is wrong, not the code".

Launchers (launch/common.py) print a UserError as one line, `error: <message>`,
and exit with code 2; any other exception is a bug and keeps its traceback.
Raise subclasses with a one-line message naming the file or config field and
what it expects.
"""


class UserError(ValueError):
  """Bad input (config field, flag, file) or environment (disk, permissions)."""
