"""Reads of the emulator's object store: get, list and the shared pages the HTTP server serialises."""

from __future__ import annotations

from druid_k8s_provider.testing.api_errors import ApiError, bad_request, not_found
from druid_k8s_provider.testing.resources import Obj, ResourceType, copy_object, list_key, resource_type
from druid_k8s_provider.testing.selectors import SelectorError, parse_field_selector, parse_label_selector
from druid_k8s_provider.testing.store_events import StoreEvents

Objects = list[Obj]  # named so the ObjectStore.list method does not shadow it in annotations


class StoreReads(StoreEvents):
    """Lookups of stored objects, by key or by selectors."""

    def _key(self, rt: ResourceType, namespace: str | None, name: str) -> tuple[str, str]:
        return (namespace or "") if rt.namespaced else "", name

    def _stored(self, rt: ResourceType) -> dict[tuple[str, str], Obj]:
        if rt.create_only:
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        return self._objects[rt.plural]

    def get(self, plural: str, namespace: str | None, name: str) -> Obj:
        """A copy of the object, or 404 NotFound."""
        with self._lock:
            return copy_object(self.get_shared(plural, namespace, name))

    def list(
        self,
        plural: str,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
    ) -> Objects:
        """Copies of matching objects, sorted by namespace then name (the order the API server lists in)."""
        return self.list_with_version(plural, namespace, label_selector, field_selector)[0]

    def list_with_version(
        self,
        plural: str,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
    ) -> tuple[Objects, str]:
        """Matching objects (copies) plus the resourceVersion the list is consistent with."""
        items, version, _ = self.shared_page(plural, namespace, label_selector, field_selector)
        return copy_object(items), version

    def shared_page(
        self,
        plural: str,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
        *,
        limit: int = 0,
        after_key: str = "",
    ) -> tuple[Objects, str, int]:
        """A page of matching objects, the list's resourceVersion and how many matches follow the page.

        For the HTTP server, which only serialises: the objects are the stored ones, shared and read-only
        (the store never changes a stored dict, it replaces it). ``after_key`` is ``namespace/name`` of the
        last object of the previous page; ``limit`` 0 means everything.
        """
        rt = resource_type(plural)
        try:
            labels = parse_label_selector(label_selector)
            fields = parse_field_selector(field_selector, plural)
        except SelectorError as error:
            raise bad_request(str(error)) from None
        wanted_name = fields.name()
        with self._lock:
            objects = self._stored(rt)
            if wanted_name is not None and (namespace or not rt.namespaced):
                found = objects.get(self._key(rt, namespace, wanted_name))
                candidates = [found] if found is not None else []
            else:
                candidates = [
                    obj
                    for (obj_namespace, _), obj in objects.items()
                    if not namespace or not rt.namespaced or obj_namespace == namespace
                ]
            items = [
                obj
                for obj in candidates
                if labels.matches(obj["metadata"].get("labels")) and fields.matches(obj)
            ]
            version = str(self._resource_version)
        items.sort(key=list_key)
        if after_key:
            items = [obj for obj in items if list_key(obj) > after_key]
        remaining = 0
        if 0 < limit < len(items):
            remaining = len(items) - limit
            items = items[:limit]
        return items, version, remaining

    def get_shared(self, plural: str, namespace: str | None, name: str) -> Obj:
        """The stored object itself, read-only (for serialising), or 404 NotFound."""
        rt = resource_type(plural)
        with self._lock:
            obj = self._stored(rt).get(self._key(rt, namespace, name))
        if obj is None:
            raise not_found(rt, name)
        return obj
