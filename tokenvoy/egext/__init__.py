"""tokenvoy's Envoy Gateway extension server: EG's xDS with tokenvoy's ext_proc filters (docs/envoy-gateway.md).

Stable API: :func:`post_translate_modify` (pure, on messages), :func:`post_translate_modify_bytes` (on the
wire), :func:`load_extension_config` / :class:`ExtensionConfig`, :func:`start_in_process` (a server on a
free port, for tests) and :data:`POST_TRANSLATE_MODIFY_PATH`.
"""

from tokenvoy.egext.config import DEFAULT_EXTPROC_SOCKET, ExtensionConfig, load_extension_config
from tokenvoy.egext.hook import HookError, post_translate_modify, post_translate_modify_bytes
from tokenvoy.egext.server import POST_TRANSLATE_MODIFY_PATH, RunningServer, start_in_process

__all__ = [
    "DEFAULT_EXTPROC_SOCKET",
    "POST_TRANSLATE_MODIFY_PATH",
    "ExtensionConfig",
    "HookError",
    "RunningServer",
    "load_extension_config",
    "post_translate_modify",
    "post_translate_modify_bytes",
    "start_in_process",
]
