"""
Errors a user may see.  Each docstring is the message shown when the
exception carries no more specific text.
"""


class P2PError(Exception):
    """something went wrong"""

    def __str__(self) -> str:
        text = super().__str__()
        return text or (self.__doc__ or "").strip()


class IndexUnavailable(P2PError):
    """index unavailable: the tracker cannot reach its database"""


class TrackerUnavailable(P2PError):
    """not connected to the tracker"""


class RequestFailed(P2PError):
    """the tracker refused the request"""

    def __init__(self, message: str = "", code: str = "error", reply=None):
        super().__init__(message)
        self.code = code
        self.reply = reply or {}


class UnsafePath(P2PError):
    """that path is not inside the repository or a share root"""


class BadName(P2PError):
    """that is not a valid shared name"""


class NotPublished(P2PError):
    """that name is not published here"""


class Conflict(P2PError):
    """that name is already published for a different file; use --force"""


class AlreadyExists(P2PError):
    """a file with that name is already in the repository; use --force"""


class NoSources(P2PError):
    """no live source has that file"""


class AmbiguousContent(P2PError):
    """several different files are published under that name; choose one with --from"""


class TransferFailed(P2PError):
    """the download failed"""


class VerificationFailed(TransferFailed):
    """the downloaded bytes do not match the published size and SHA-256"""


class Busy(TransferFailed):
    """the source is serving as many sessions as it allows"""


class FileTooLarge(P2PError):
    """the file is larger than this peer allows"""


class AlreadyHave(AlreadyExists):
    """the repository already has that file, with the same SHA-256"""

    def __init__(self, message: str = "", path: str = "", sha256: str | None = None):
        super().__init__(message)
        self.path = path
        self.sha256 = sha256


class Interrupted(TransferFailed):
    """the download was stopped"""

    def __init__(
        self,
        message: str = "",
        fname: str = "",
        reason: str = "interrupted",
        kept: int = 0,
        pieces: int | None = None,
    ):
        super().__init__(message)
        #: What stopped it: ``interrupted`` (the peer is stopping),
        #: ``paused`` or ``cancelled``.
        self.fname = fname
        self.reason = reason
        #: Verified pieces kept on disk, and the file's piece count (None
        #: for a whole-file download, which keeps nothing).
        self.kept = kept
        self.pieces = pieces
