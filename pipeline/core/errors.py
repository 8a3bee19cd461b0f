"""Domain errors and the one exit-code rule shared by every task.

::

    PipelineError                 exit 1 unless a subclass says otherwise
    ├── InputError                exit 2: unusable input; nothing was created
    │   ├── ConfigError           the YAML configuration is invalid
    │   ├── ImageReadError        a disk image or snapshot cannot be read
    │   ├── PreflightError        a pre-flight check refused the input
    │   ├── AwsSetupError         credentials, profile, region or endpoint unusable
    │   ├── LintError             user data or a launch template was refused
    │   ├── FileChangedError      a file changed while it was read or uploaded
    │   └── NoSource              an imported image's source file does not exist (yet)
    └── OperationFailed           exit 1: the operation ran and failed
        ├── AwsCallError          an AWS call failed
        ├── VerificationFailed    the bootstrap contract does not hold
        ├── ImportTaskFailed      an EC2 VM Import task ended in failure
        ├── PackerBuildFailed     packer validate/build failed
        ├── PublicationGated      the build is not available in every region yet
        ├── LockHeld              another run holds the lock and it has not expired
        └── UnsafeSelection       a destructive call refused an empty, unfiltered or
                                  unproven selection (pipeline.aws.cleanup); nothing deleted

Every message is one line that names the input and says what to do next. Keep the
cause with ``raise ... from err``.
"""
from __future__ import annotations

__all__ = [
    "EXIT_OK",
    "EXIT_FAILED",
    "EXIT_BAD_INPUT",
    "PipelineError",
    "InputError",
    "ConfigError",
    "ImageReadError",
    "PreflightError",
    "AwsSetupError",
    "LintError",
    "FileChangedError",
    "NoSource",
    "OperationFailed",
    "AwsCallError",
    "VerificationFailed",
    "ImportTaskFailed",
    "PackerBuildFailed",
    "PublicationGated",
    "LockHeld",
    "UnsafeSelection",
    "exit_code_for",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class PipelineError(Exception):
    """Base of every error this tool raises on purpose."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, details: object | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: Structured data for ``--json`` output (a verification report, problems...).
        self.details = details


class InputError(PipelineError):
    """The input or configuration cannot be used; nothing was created in AWS."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(InputError):
    """The configuration file is missing or invalid.

    ``problems`` holds one line per problem: ``file: key.path: expected ...``.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message, details={"problems": problems or [message]})
        self.problems = problems or [message]


class ImageReadError(InputError):
    """A disk image, an AMI or a snapshot cannot be read or understood."""


class PreflightError(InputError):
    """A check before any upload or creation refused the input."""


class AwsSetupError(InputError):
    """The AWS set-up cannot be used (no or expired credentials, unknown profile, unknown
    region, an endpoint that does not answer, access denied) and nothing was changed."""


class LintError(InputError):
    """User data or launch template content was refused.

    ``problems`` holds one line per problem.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message, details={"problems": problems or [message]})
        self.problems = problems or [message]


class FileChangedError(InputError):
    """The file no longer matches the digest it was uploaded under (it changed, shrank or
    disappeared while it was read or uploaded)."""


class NoSource(InputError):
    """An imported image's source file does not exist (yet): rebuild skips the image."""


class OperationFailed(PipelineError):
    """The operation ran and did not succeed."""

    exit_code = EXIT_FAILED


class AwsCallError(OperationFailed):
    """An AWS API call failed in a way the tool cannot recover from.

    ``code`` is AWS's error code (``InvalidAMIID.NotFound``; '' for a transport failure)
    and ``operation`` the API operation (``DescribeImages``), so callers decide on the code
    without digging in ``__cause__``.
    """

    def __init__(self, message: str, *, code: str = "", operation: str = "",
                 details: object | None = None) -> None:
        super().__init__(message, details=details)
        self.code = code
        self.operation = operation


class VerificationFailed(OperationFailed):
    """The image was read and its bootstrap contract does not hold."""


class ImportTaskFailed(OperationFailed):
    """An EC2 VM Import task ended in ``deleting``/``deleted``."""


class PackerBuildFailed(OperationFailed):
    """``packer validate`` or ``packer build`` failed."""


class PublicationGated(OperationFailed):
    """The build is not available in every configured region yet; nothing was published."""


class LockHeld(OperationFailed):
    """Another run holds the lock and it has not expired."""


class UnsafeSelection(OperationFailed):
    """A destructive call was asked to act on an empty, unfiltered or unproven set of
    resources (not the run's own); it raised before deleting anything."""


def exit_code_for(err: BaseException) -> int:
    """The process exit code for ``err`` (1 for anything that is not ours)."""
    if isinstance(err, PipelineError):
        return err.exit_code
    return EXIT_FAILED
