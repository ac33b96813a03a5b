"""Shared pydantic base: camelCase on the wire, strict about unknown fields."""

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class WireModel(BaseModel):
    """Base of every resource and file format: camelCase aliases, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
        validate_default=True,  # defaults become enum values too, like parsed input
    )

    def to_wire(self) -> dict:
        """The JSON-ready dict as it is stored: aliases, no unset optionals."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
