"""Exit codes, the same for every command (README: "Exit codes"), and the one
exception a command raises to end with one of them."""

import enum


class Exit(enum.IntEnum):
    OK = 0
    INTERNAL = 1  # unexpected failure; the log names what failed
    USAGE = 2  # bad arguments
    CONFIG = 3  # configuration or credentials missing or unreadable
    DB_UNAVAILABLE = 4  # cannot connect or authenticate to the database
    LOCKED = 5  # another run held the lock for longer than the wait
    NO_SPACE = 6  # not enough free space
    DUMP_FAILED = 7  # the dump (or writing it) failed; nothing was published
    BAD_BACKUP = 8  # backup missing, incomplete or failing its checksum
    RESTORE_FAILED = 9  # loading or checking the backup failed; the live database is unchanged
    VERIFY_MISMATCH = 10  # the test restore does not match the backup's manifest
    NOT_CONFIRMED = 11  # restore not confirmed; nothing was changed
    COMMAND_FAILED = 12  # the job's own command failed (clear_sessions, custom jobs)
    REFUSED = 13  # refused: another session or lock blocks it; nothing was changed
    OFFSITE_FAILED = 14  # an off-site repository could not be written, read or checked
    PARTIAL = 15  # a restore swapped the database in, then a later step failed; the log says what is where
    INTERRUPTED = 130  # stopped by a signal (Ctrl-C, TERM); the log says what was left


class Failure(Exception):
    """Ends the command with CODE; MESSAGE is the log's ERROR line, and says what
    failed and what that means for the data."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = Exit(code)
        self.message = message

    def __str__(self):
        return self.message
