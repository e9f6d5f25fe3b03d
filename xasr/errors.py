"""The error type for problems a user can fix (bad input, missing packages): the CLI prints its
message, which names the file or command involved, without a traceback."""


class XasrError(RuntimeError):
    pass


class TrainingTerminated(XasrError):
    """Training stopped on SIGTERM after saving a checkpoint; the CLI exits with 128 + 15, the
    status a scheduler expects from a job it terminated."""

    exit_status = 143
