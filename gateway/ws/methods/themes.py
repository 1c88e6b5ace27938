"""OpenClaw's Control UI's themes: `themes.list`, what its Appearance page lists.

OpenClaw keeps a person's theme (and the themes they import) in their user profile; clawgate
has no profiles, so the catalog is OpenClaw's built-in themes, which its UI ships and draws
itself, and the gateway's choice is OpenClaw's default without a `ui` section: Claw, following
the system's light or dark mode. The UI keeps a choice made on the page in the browser.
"""

from __future__ import annotations

from typing import Any, Final

from gateway.ws.dispatch import CallContext, MethodRegistry, no_params
from gateway.ws.protocol import READ

# OpenClaw's built-in catalog (its gateway-protocol theme.ts), in its order: id, name,
# description; each has a light and a dark palette.
_BUILT_IN: Final = (
    (
        "claw",
        "Claw",
        "Signature coral red and teal on charcoal or pale surfaces, with Instrument Sans"
        " throughout. A balanced everyday workspace.",
    ),
    (
        "knot",
        "Knot",
        "Crimson accents on true black or clean white, with Geist typography. Sharp, minimal,"
        " and high contrast.",
    ),
    (
        "dash",
        "Dash",
        "Toasted caramel on deep cocoa or warm cream, with DM Sans controls and Fraunces serif"
        " chat. Warm and bookish.",
    ),
    (
        "absolutely",
        "Absolutely",
        "Terracotta clay on warm graphite or soft cream, with Space Grotesk controls and Lora"
        " serif chat. Quiet editorial character.",
    ),
    (
        "tide",
        "Tide",
        "Steel cyan on cool slate or pale blue-gray, with IBM Plex Sans throughout. Calm,"
        " technical, and understated.",
    ),
    (
        "beacon",
        "Beacon",
        "High-visibility amber on black or white, bold focus rings, and Atkinson Hyperlegible"
        " typography. Designed for maximum readability.",
    ),
    (
        "phosphor",
        "Phosphor",
        "Luminous green on green-tinted black or pale green, with JetBrains Mono throughout. A"
        " classic green terminal atmosphere.",
    ),
    (
        "crt",
        "CRT",
        "White phosphor and amber on tube black, with a light counterpart, JetBrains Mono, and"
        " nearly square corners. A retro computer console.",
    ),
    (
        "manuscript",
        "Manuscript",
        "Lapis blue and gold on aged paper, with a dark reading-room variant and Lora serif"
        " throughout. A quiet illuminated manuscript.",
    ),
    (
        "rose",
        "Rosé",
        "Dried rose and gold on deep plum-gray or soft rose-tinted cream, with DM Sans. Gentle,"
        " muted, and warm.",
    ),
    (
        "miami",
        "Miami",
        "Hot magenta and cyan on violet-black or pale lavender, with Space Grotesk. Bright neon"
        " energy and a synthwave character.",
    ),
)
THEMES: Final[tuple[dict[str, Any], ...]] = tuple(
    {
        "id": theme_id,
        "name": name,
        "description": description,
        "source": "builtin",
        "modes": ["light", "dark"],
    }
    for theme_id, name, description in _BUILT_IN
)
# The gateway's choice (`scope: "gateway"`: no profile's own), nothing overridden.
CURRENT: Final = {"id": "claw", "mode": "system", "scope": "gateway", "overrides": {}}


def register(methods: MethodRegistry) -> None:
    @methods.method("themes.list", params=no_params, scope=READ)
    async def themes_list(ctx: CallContext, params: None) -> Any:
        return {"current": CURRENT, "theme": THEMES[0], "themes": list(THEMES)}
