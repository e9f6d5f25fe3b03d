"""The error type for problems a user can fix (bad input, missing packages): the CLI prints its
message, which names the file or command involved, without a traceback."""


class XasrError(RuntimeError):
    pass
