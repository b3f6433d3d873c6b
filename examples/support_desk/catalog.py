"""Northwind Outfitters' catalogue: the products the generator sells and the articles describe.

Prices are list prices in EUR (``policies.LIST_RATES`` converts them). Electronics carry the
error codes their troubleshooting articles explain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final


@dataclass(frozen=True, kw_only=True)
class Product:
    """One product: stock keeping unit, name, category (``policies.CATEGORIES``), price."""

    sku: str
    name: str
    category: str
    price_eur: float
    #: For devices: error code -> (what it means, what to do).
    errors: dict[str, tuple[str, str]] = field(default_factory=dict)


def _p(sku: str, name: str, category: str, price: float,
       errors: dict[str, tuple[str, str]] | None = None) -> Product:
    return Product(sku=sku, name=name, category=category, price_eur=price, errors=errors or {})


PRODUCTS: Final = (
    _p("AP-1001", "Fjordline Rain Shell Jacket", "apparel", 149.0),
    _p("AP-1002", "Fjordline Insulated Parka", "apparel", 229.0),
    _p("AP-1003", "Heather Merino Base Layer", "apparel", 59.9),
    _p("AP-1004", "Ridgewalk Softshell Trousers", "apparel", 89.0),
    _p("AP-1005", "Driftwood Fleece Midlayer", "apparel", 69.0),
    _p("AP-1006", "Coldfront Down Vest", "apparel", 119.0),
    _p("AP-1007", "Trailhead Hiking Socks (3 pairs)", "apparel", 24.5),
    _p("AP-1008", "Windbreak Beanie", "apparel", 19.9),
    _p("FW-2001", "Basalt Mid GTX Hiking Boot", "footwear", 179.0),
    _p("FW-2002", "Scree Trail Running Shoe", "footwear", 129.0),
    _p("FW-2003", "Camp Slip-on Recovery Shoe", "footwear", 49.0),
    _p("FW-2004", "Glacier Mountaineering Boot", "footwear", 389.0),
    _p("CP-3001", "Nordkapp 2-Person Tent", "camping", 399.0),
    _p("CP-3002", "Summit 4-Season Expedition Tent", "camping", 1249.0),
    _p("CP-3003", "Lowland 3-Season Sleeping Bag", "camping", 159.0),
    _p("CP-3004", "Aurora Down Sleeping Bag -15C", "camping", 449.0),
    _p("CP-3005", "Pinecone Self-Inflating Mat", "camping", 79.0),
    _p("CP-3006", "Emberlight Camping Stove", "camping", 64.5),
    _p("CP-3007", "Fjell 45L Trekking Backpack", "camping", 189.0),
    _p("CP-3008", "Daytripper 22L Pack", "camping", 74.0),
    _p("CP-3009", "Titanium Cook Set", "camping", 54.0),
    _p("CP-3010", "Collapsible Water Carrier 10L", "camping", 18.5),
    _p("CL-4001", "Granite Climbing Harness", "climbing", 84.0),
    _p("CL-4002", "Crag 9.8mm Dynamic Rope 60m", "climbing", 169.0),
    _p("CL-4003", "Boulder Chalk Bag", "climbing", 22.0),
    _p("CL-4004", "Overhang Climbing Shoe", "climbing", 119.0),
    _p("CL-4005", "Carabiner Set (6)", "climbing", 59.0),
    _p("BK-5001", "Ridgeback Carbon Trekking E-Bike", "bikes", 2490.0),
    _p("BK-5002", "Gravelline Adventure Bike", "bikes", 1390.0),
    _p("BK-5003", "Pannier Pair 2x20L", "bikes", 99.0),
    _p("BK-5004", "Trail Helmet MIPS", "bikes", 119.0),
    _p("EL-6001", "TrailSync GPS Watch", "electronics", 329.0, {
        "E12": ("the satellite fix timed out", "go outdoors with a clear view of the sky and "
                "hold the watch still for two minutes"),
        "E31": ("the watch could not sync with the Northwind app", "turn Bluetooth off and on, "
                "then pair again from the app's Devices page"),
        "E44": ("the battery is below the temperature limit", "warm the watch to above 0 C "
                "before charging"),
    }),
    _p("EL-6002", "Beacon 800 Headlamp", "electronics", 69.0, {
        "E02": ("the battery pack is not seated", "remove the pack and click it back in "
                "until both latches close"),
        "E07": ("overheat protection dimmed the lamp", "switch to the 300-lumen mode and let "
                "it cool for ten minutes"),
    }),
    _p("EL-6003", "Waypoint Satellite Messenger", "electronics", 449.0, {
        "E21": ("no satellite subscription is active on the device", "activate a plan in "
                "the Northwind app under Devices > Messaging"),
        "E23": ("the message is queued without sky view", "keep the messenger on top of "
                "your pack; it retries every 15 minutes"),
    }),
    _p("EL-6004", "Solarcell 20,000 mAh Power Bank", "electronics", 89.0, {
        "E05": ("a port is drawing more than 3 A", "unplug one device and reconnect"),
    }),
    _p("EL-6005", "Ridgecam 4K Action Camera", "electronics", 279.0, {
        "E50": ("the memory card is full or not formatted", "format the card in the camera "
                "(Settings > Storage) after copying your files off it"),
        "E52": ("the card is too slow for 4K", "use a V30 card or faster"),
    }),
)

BY_SKU: Final = {p.sku: p for p in PRODUCTS}

#: Errors the Northwind app shows (code -> (meaning, what to do)).
APP_ERRORS: Final = {
    "APP-101": ("the sign-in session expired", "sign in again; sessions last 30 days"),
    "APP-204": ("the order number was not found on this account",
                "check that you are signed in with the e-mail address you ordered with"),
    "APP-309": ("the payment was declined by the bank",
                "try another card or contact your bank; nothing was charged"),
    "APP-412": ("the delivery address could not be verified",
                "check the postcode format for the destination country"),
    "APP-503": ("the shop is briefly unavailable for maintenance",
                "try again in a few minutes; your basket is kept"),
    "APP-615": ("two-step sign-in code was wrong or expired",
                "request a new code; codes are valid for 10 minutes"),
}
