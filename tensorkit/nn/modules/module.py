"""``nn.Module``: the base class of layers and models, with PyTorch's behaviour.

Assigning a ``Parameter``, a ``Module`` or (through ``register_buffer``) a tensor to an
attribute registers it; ``named_parameters``, ``state_dict``, ``to`` and friends walk what
was registered, in registration order, with PyTorch's dotted names, so a state dict moves
between PyTorch and tensorkit by key. This module computes nothing itself: layers are in the
sibling modules, their math in ``nn/functional.py``.
"""
from __future__ import annotations

import itertools
import warnings
from collections import OrderedDict
from typing import Callable, Iterator

from ... import dtypes as D
from ..._tensor import Tensor
from ...autograd.function import Function
from ...autograd.grad_mode import no_grad, state
from ...device import device as Device
from ...ops.creation import to_args
from ..parameter import Buffer, Parameter


class RemovableHandle:
    """Returned by the ``register_*_hook`` methods; ``remove()`` takes the hook off again
    (also usable as a context manager)."""

    _ids = itertools.count()

    def __init__(self, *dicts: dict):
        self.id = next(RemovableHandle._ids)
        self._dicts = dicts

    def remove(self) -> None:
        for d in self._dicts:
            d.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


class _IncompatibleKeys:
    """What ``load_state_dict`` returns: ``(missing_keys, unexpected_keys)``, as PyTorch's named tuple."""

    def __init__(self, missing_keys: list, unexpected_keys: list):
        self.missing_keys, self.unexpected_keys = missing_keys, unexpected_keys

    def __iter__(self):
        return iter((self.missing_keys, self.unexpected_keys))

    def __eq__(self, other):
        return tuple(self) == tuple(other)

    def __repr__(self) -> str:
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return f"_IncompatibleKeys(missing_keys={self.missing_keys}, unexpected_keys={self.unexpected_keys})"


def _addindent(s: str, n: int) -> str:
    lines = s.split("\n")
    return lines[0] if len(lines) == 1 else "\n".join([lines[0]] + [" " * n + line for line in lines[1:]])


class Module:
    """Base class of all layers and models.

    Subclasses set their parameters, buffers and submodules as attributes in ``__init__``
    (after ``super().__init__()``) and define ``forward``; call the module, not ``forward``,
    so hooks run.

    Example::

        >>> class Net(tk.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.fc = tk.nn.Linear(4, 2)
        ...     def forward(self, x):
        ...         return self.fc(x).relu()
        >>> [name for name, _ in Net().named_parameters()]
        ['fc.weight', 'fc.bias']
    """

    training: bool
    _version: int = 1
    call_super_init: bool = False

    def __init__(self, *args, **kwargs) -> None:
        if args or kwargs:
            raise TypeError(f"{type(self).__name__}.__init__() got unexpected arguments {args} {kwargs}: "
                            f"Module.__init__ takes none")
        d = self.__dict__
        d["training"] = True
        d["_parameters"] = {}
        d["_buffers"] = {}
        d["_non_persistent_buffers_set"] = set()
        d["_modules"] = {}
        d["_forward_pre_hooks"] = OrderedDict()
        d["_forward_pre_hooks_with_kwargs"] = {}
        d["_forward_hooks"] = OrderedDict()
        d["_forward_hooks_with_kwargs"] = {}
        d["_forward_hooks_always_called"] = {}
        d["_backward_pre_hooks"] = OrderedDict()
        d["_backward_hooks"] = OrderedDict()

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required "forward" function')

    # ---- calling, with hooks ----------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        if not (self._forward_pre_hooks or self._forward_hooks or self._backward_hooks or self._backward_pre_hooks
                or _global_hooks_active()):
            return self.forward(*args, **kwargs)
        return self._call_with_hooks(args, kwargs)

    def _call_with_hooks(self, args, kwargs):
        pre = list(_global_forward_pre_hooks.items()) + list(self._forward_pre_hooks.items())
        for hid, hook in pre:
            if self._forward_pre_hooks_with_kwargs.get(hid):
                r = hook(self, args, kwargs)
                if r is not None:
                    if not (isinstance(r, tuple) and len(r) == 2):
                        raise RuntimeError(f"forward pre-hook must return None or a tuple of (new_args, new_kwargs), "
                                           f"but got {r}.")
                    args, kwargs = r
            else:
                r = hook(self, args)
                if r is not None:
                    args = r if isinstance(r, tuple) else (r,)
        bw = None
        if self._backward_hooks or self._backward_pre_hooks or _global_backward_hooks or _global_backward_pre_hooks:
            # the hook lists are taken now, as PyTorch does: removing a handle after this forward
            # does not stop it firing in this forward's backward
            bw = _BackwardHook(self, [*_global_backward_hooks.values(), *self._backward_hooks.values()],
                               [*_global_backward_pre_hooks.values(), *self._backward_pre_hooks.values()])
            args = bw.wrap_inputs(args)
        try:
            result = self.forward(*args, **kwargs)
        except Exception:
            for hid, hook in list(self._forward_hooks.items()):      # always_call hooks run even then
                if self._forward_hooks_always_called.get(hid):
                    try:
                        hook(self, args, kwargs, None) if self._forward_hooks_with_kwargs.get(hid) else \
                            hook(self, args, None)
                    except Exception:  # noqa: BLE001  (the forward's error is the one to report)
                        pass
            raise
        post = list(_global_forward_hooks.items()) + list(self._forward_hooks.items())
        for hid, hook in post:
            if self._forward_hooks_with_kwargs.get(hid):
                r = hook(self, args, kwargs, result)
            else:
                r = hook(self, args, result)
            if r is not None:
                result = r
        if bw is not None:
            result = bw.wrap_outputs(result)
        return result

    def register_forward_pre_hook(self, hook: Callable, *, prepend: bool = False,
                                  with_kwargs: bool = False) -> RemovableHandle:
        """``hook(module, args)`` runs before ``forward``; returning a value replaces the
        positional arguments (a non-tuple becomes a 1-tuple). With ``with_kwargs=True`` it is
        ``hook(module, args, kwargs)`` and may return ``(args, kwargs)``."""
        handle = RemovableHandle(self._forward_pre_hooks, self._forward_pre_hooks_with_kwargs)
        self._forward_pre_hooks[handle.id] = hook
        if with_kwargs:
            self._forward_pre_hooks_with_kwargs[handle.id] = True
        if prepend:
            self._forward_pre_hooks.move_to_end(handle.id, last=False)
        return handle

    def register_forward_hook(self, hook: Callable, *, prepend: bool = False, with_kwargs: bool = False,
                              always_call: bool = False) -> RemovableHandle:
        """``hook(module, args, output)`` runs after ``forward``; returning a value replaces the
        output. With ``with_kwargs=True`` it is ``hook(module, args, kwargs, output)``;
        ``always_call=True`` also calls it (with output None) when ``forward`` raises."""
        handle = RemovableHandle(self._forward_hooks, self._forward_hooks_with_kwargs,
                                 self._forward_hooks_always_called)
        self._forward_hooks[handle.id] = hook
        if with_kwargs:
            self._forward_hooks_with_kwargs[handle.id] = True
        if always_call:
            self._forward_hooks_always_called[handle.id] = True
        if prepend:
            self._forward_hooks.move_to_end(handle.id, last=False)
        return handle

    def register_full_backward_pre_hook(self, hook: Callable, prepend: bool = False) -> RemovableHandle:
        """``hook(module, grad_output)`` runs when the gradients of the module's outputs are
        known, before those of its inputs are computed; returning a tuple (one entry per
        output) replaces ``grad_output``. ``grad_output`` has one entry per output (a Tensor
        output is a 1-tuple); None for non-Tensor outputs and outputs that got no gradient.
        Global pre-hooks (``register_module_full_backward_pre_hook``) run first.

        Example::

            >>> h = lin.register_full_backward_pre_hook(lambda m, go: (go[0].clamp(-1, 1),))
        """
        handle = RemovableHandle(self._backward_pre_hooks)
        self._backward_pre_hooks[handle.id] = hook
        if prepend:
            self._backward_pre_hooks.move_to_end(handle.id, last=False)
        return handle

    def register_full_backward_hook(self, hook: Callable, prepend: bool = False) -> RemovableHandle:
        """``hook(module, grad_input, grad_output)`` runs once per backward, when the gradients
        of the module's inputs are computed; returning a tuple replaces ``grad_input``.

        ``grad_input`` has one entry per positional argument (keyword arguments are ignored):
        None for non-Tensors; a Tensor input that does not require grad gets zeros (as
        PyTorch). ``grad_output`` has one entry per output, None where there is no gradient.
        If no input requires grad (a first layer), the hook runs when the outputs' gradients
        are known, with ``grad_input`` all None, and warns (as PyTorch); it fires not at all
        when no output requires grad, or when the forward ran under ``no_grad``. Global hooks
        (``register_module_full_backward_hook``) run first.

        As in PyTorch, ``forward`` then sees aliases of its Tensor arguments and the caller gets
        aliases of the outputs (their ``grad_fn`` is ``BackwardHookFunctionBackward``); writing
        into either in place raises (clone first, or use ``inplace=False``). A module without
        backward hooks pays nothing: nothing is wrapped.

        Example::

            >>> seen = []
            >>> h = lin.register_full_backward_hook(lambda m, gi, go: seen.append(go[0].shape))
            >>> lin(x).sum().backward(); h.remove()
        """
        handle = RemovableHandle(self._backward_hooks)
        self._backward_hooks[handle.id] = hook
        if prepend:
            self._backward_hooks.move_to_end(handle.id, last=False)
        return handle

    def register_backward_hook(self, hook: Callable) -> RemovableHandle:
        """Deprecated: use ``register_full_backward_hook``. PyTorch's old hook sees the
        gradients of whichever autograd node made the output last (for ``Linear``: bias,
        input, weight.T), a known trap; tensorkit runs it as a full backward hook, with the
        documented ``(module, grad_input, grad_output)``, and warns."""
        warnings.warn("register_backward_hook is deprecated; tensorkit runs it as register_full_backward_hook "
                      "(grad_input: the gradients of the module's inputs). Use register_full_backward_hook.",
                      DeprecationWarning, stacklevel=2)
        return self.register_full_backward_hook(hook)

    # ---- registration -----------------------------------------------------------------------------------
    def _check_name(self, name, kind: str) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {kind} before Module.__init__() call")
        if not isinstance(name, str):
            raise TypeError(f"{kind} name should be a string. Got {type(name).__name__}")
        if name == "":
            raise KeyError(f'{kind} name can\'t be empty string ""')
        if "." in name:
            raise KeyError(f'{kind} name can\'t contain ".", got: {name}')

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Add a buffer: module state that is not a parameter (``BatchNorm``'s running mean).
        It moves with ``to()``; ``persistent=False`` keeps it out of ``state_dict``."""
        self._check_name(name, "buffer")
        if hasattr(self, name) and name not in self._buffers:
            raise KeyError(f"attribute '{name}' already exists")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign '{type(tensor).__name__}' object to buffer '{name}' "
                            f"(torch Tensor or None required)")
        if isinstance(tensor, Buffer):
            tensor = tensor._data
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers_set.discard(name)
        else:
            self._non_persistent_buffers_set.add(name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add a parameter (``None`` registers the name with no value, as a layer without bias)."""
        self._check_name(name, "parameter")
        if hasattr(self, name) and name not in self._parameters:
            raise KeyError(f"attribute '{name}' already exists")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{type(param).__name__}' object to parameter '{name}' "
                            f"(tk.nn.Parameter or None required)")
        if param is not None and param.grad_fn is not None:
            raise ValueError(f"Cannot assign non-leaf Tensor to parameter '{name}'. Model parameters must be "
                             f"created explicitly; to express '{name}' as a function of another Tensor, compute "
                             f"the value in the forward() method.")
        self._parameters[name] = param

    def add_module(self, name: str, module: "Module | None") -> None:
        """Add a submodule, reachable as attribute ``name``."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._check_name(name, "module")
        if hasattr(self, name) and name not in self._modules:
            raise KeyError(f"attribute '{name}' already exists")
        self._modules[name] = module

    register_module = add_module

    def get_submodule(self, target: str) -> "Module":
        """The submodule at dotted path ``target`` (``"" `` is self)."""
        mod = self
        if target == "":
            return mod
        for item in target.split("."):
            if item not in mod._modules:
                raise AttributeError(f"{mod._get_name()} has no attribute `{item}`")
            mod = mod._modules[item]
        return mod

    def get_parameter(self, target: str) -> Parameter:
        module_path, _, name = target.rpartition(".")
        mod = self.get_submodule(module_path)
        if name not in mod._parameters:
            raise AttributeError(f"{mod._get_name()} has no parameter `{name}`")
        return mod._parameters[name]

    def get_buffer(self, target: str) -> Tensor:
        module_path, _, name = target.rpartition(".")
        mod = self.get_submodule(module_path)
        if name not in mod._buffers:
            raise AttributeError(f"{mod._get_name()} has no buffer `{name}`")
        return mod._buffers[name]

    def __getattr__(self, name: str):
        # only called when normal lookup fails: parameters, buffers and submodules live in dicts
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __setattr__(self, name: str, value) -> None:
        d = self.__dict__
        params = d.get("_parameters")

        def remove_from(*stores):
            for s in stores:
                if name in s:
                    if s is d:
                        del d[name]
                    else:
                        del s[name]

        if isinstance(value, Parameter):
            if params is None:
                raise AttributeError("cannot assign parameters before Module.__init__() call")
            remove_from(d, self._buffers, self._modules, self._non_persistent_buffers_set)
            self.register_parameter(name, value)
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                                f"(tk.nn.Parameter or None expected)")
            self.register_parameter(name, value)
        elif isinstance(value, Module):
            modules = d.get("_modules")
            if modules is None:
                raise AttributeError("cannot assign module before Module.__init__() call")
            remove_from(d, self._parameters, self._buffers, self._non_persistent_buffers_set)
            modules[name] = value
        elif d.get("_modules") is not None and name in d["_modules"]:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as child module '{name}' "
                                f"(tk.nn.Module or None expected)")
            d["_modules"][name] = value
        elif isinstance(value, Buffer):
            if d.get("_buffers") is None:
                raise AttributeError("cannot assign buffer before Module.__init__() call")
            remove_from(d, self._parameters, self._modules)
            self.register_buffer(name, value, value.persistent)
        elif d.get("_buffers") is not None and name in d["_buffers"]:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{type(value).__name__}' as buffer '{name}' "
                                f"(tk.Tensor or None expected)")
            d["_buffers"][name] = value
        else:
            object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        for store in ("_parameters", "_buffers", "_modules"):
            if name in self.__dict__.get(store, ()):
                del self.__dict__[store][name]
                self._non_persistent_buffers_set.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        keys = list(super().__dir__()) + list(self._parameters) + list(self._buffers) + list(self._modules)
        return sorted(k for k in set(keys) if not k[0].isdigit())

    # ---- walking the tree ---------------------------------------------------------------------------------
    def named_modules(self, memo: set | None = None, prefix: str = "", remove_duplicate: bool = True):
        """``(dotted name, module)`` for this module and every submodule, depth first, each
        module once (unless ``remove_duplicate=False``)."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is None:
                continue
            yield from module.named_modules(memo, prefix + ("." if prefix else "") + name, remove_duplicate)

    def modules(self) -> Iterator["Module"]:
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        """``(name, module)`` for each direct submodule (each module once)."""
        seen = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self) -> Iterator["Module"]:
        for _, m in self.named_children():
            yield m

    def _named_members(self, get_members, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        seen = set()
        modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse \
            else [(prefix, self)]
        for module_prefix, module in modules:
            for k, v in get_members(module):
                if v is None or (remove_duplicate and id(v) in seen):
                    continue
                if remove_duplicate:
                    seen.add(id(v))
                yield module_prefix + ("." if module_prefix else "") + k, v

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        """``(dotted name, parameter)`` pairs, in registration order; a parameter shared by two
        modules comes once (under its first name) unless ``remove_duplicate=False``."""
        yield from self._named_members(lambda m: m._parameters.items(), prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        yield from self._named_members(lambda m: m._buffers.items(), prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    # ---- state dict ---------------------------------------------------------------------------------------
    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        for name, p in self._parameters.items():
            if p is not None:
                destination[prefix + name] = p if keep_vars else p.detach()
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent_buffers_set:
                destination[prefix + name] = b if keep_vars else b.detach()

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False) -> dict:
        """Parameters and persistent buffers by dotted name (``fc.weight``, ``bn.running_mean``),
        as PyTorch names them. Values share memory with the module (detached unless
        ``keep_vars``)."""
        if args:                         # PyTorch's deprecated positional (destination, prefix, keep_vars)
            destination, prefix, keep_vars = (list(args) + [destination, prefix, keep_vars][len(args):])[:3]
        if destination is None:
            destination = OrderedDict()
        self._save_to_state_dict(destination, prefix, keep_vars)
        for name, module in self._modules.items():
            if module is not None:
                module.state_dict(destination=destination, prefix=prefix + name + ".", keep_vars=keep_vars)
        return destination

    def _load_from_state_dict(self, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                              missing: list, unexpected: list, errors: list) -> None:
        """Load this module's own parameters and persistent buffers (PyTorch's signature, so a
        layer can override it as in PyTorch, e.g. to accept an older checkpoint's keys)."""
        assign = local_metadata.get("assign_to_params_buffers", False)
        persistent_buffers = {k: v for k, v in self._buffers.items() if k not in self._non_persistent_buffers_set}
        local = {k: v for k, v in itertools.chain(self._parameters.items(), persistent_buffers.items())
                 if v is not None}
        for name, param in local.items():
            key = prefix + name
            if key not in state_dict:
                missing.append(key)
                continue
            value = state_dict[key]
            if not isinstance(value, Tensor):
                errors.append(f'While copying the parameter named "{key}", expected a tensor from the checkpoint '
                              f"but received {type(value).__name__}")
                continue
            if tuple(value.shape) != tuple(param.shape):
                errors.append(f"size mismatch for {key}: copying a param with shape {list(value.shape)} from "
                              f"checkpoint, the shape in current model is {list(param.shape)}.")
                continue
            try:
                with no_grad():
                    if assign:
                        new = value if not isinstance(param, Parameter) or isinstance(value, Parameter) \
                            else Parameter(value, param.requires_grad)
                        setattr(self, name, new)
                    else:
                        param.copy_(value)
            except Exception as e:  # noqa: BLE001  (reported with the key, as PyTorch does)
                errors.append(f'While copying the parameter named "{key}", whose dimensions in the model are '
                              f"{list(param.shape)} and whose dimensions in the checkpoint are "
                              f"{list(value.shape)}, an exception occurred : {e}.")
        if strict:
            for key in state_dict:
                if key.startswith(prefix):
                    rest = key[len(prefix):]
                    name = rest.split(".", 1)[0]
                    if name not in self._modules and name not in local:
                        unexpected.append(key)

    def load_state_dict(self, state_dict: dict, strict: bool = True, assign: bool = False) -> _IncompatibleKeys:
        """Copy values from ``state_dict`` (as ``state_dict()`` returns, or PyTorch's for the same
        model: keys are the same) into the parameters and buffers.

        Args:
            strict: missing or unexpected keys raise RuntimeError naming them.
            assign: set the checkpoint's tensors in place of the module's, instead of copying.
        Returns:
            ``(missing_keys, unexpected_keys)``.
        Raises:
            RuntimeError naming each missing or unexpected key (``strict``) and each shape mismatch.
        """
        if not isinstance(state_dict, dict):
            raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict)}.")
        state_dict = OrderedDict(state_dict)            # overrides of _load_from_state_dict may edit it
        missing, unexpected, errors = [], [], []

        def load(module: Module, prefix: str) -> None:
            module._load_from_state_dict(state_dict, prefix, {"assign_to_params_buffers": assign}, True, missing,
                                         unexpected, errors)
            for name, child in module._modules.items():
                if child is not None:
                    load(child, prefix + name + ".")

        load(self, "")
        if strict:
            if unexpected:
                errors.insert(0, "Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ". ")
            if missing:
                errors.insert(0, "Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ". ")
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors))
        return _IncompatibleKeys(missing, unexpected)

    # ---- modes, devices, dtypes ---------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        """Training mode (``mode=True``) or evaluation mode for this module and its submodules:
        changes what ``Dropout`` and ``BatchNorm`` do. Returns self."""
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        self.training = mode
        for m in self.children():
            m.train(mode)
        return self

    def eval(self) -> "Module":
        """``train(False)``."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        """Set ``requires_grad`` on every parameter (freezing with ``False``). Returns self."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the parameters' gradients: to None (default), or to zeros."""
        for p in self.parameters():
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    g = p.grad.detach() if p.grad.grad_fn is not None else p.grad
                    p.grad = g.zero_()

    def apply(self, fn: Callable[["Module"], None]) -> "Module":
        """Call ``fn`` on every submodule (children first) and then on self (e.g. to initialise
        weights). Returns self."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    def _apply(self, fn: Callable[[Tensor], Tensor]) -> "Module":
        """Replace every parameter's and buffer's data by ``fn(data)``; parameters stay the same
        ``Parameter`` objects (optimizers holding them keep working), as in PyTorch."""
        for m in self.children():
            m._apply(fn)
        for name, p in self._parameters.items():
            if p is None:
                continue
            with no_grad():
                new = fn(p)
            if new is not p:
                _set_data(p, new)
            if p.grad is not None:
                with no_grad():
                    g = fn(p.grad)
                if g is not p.grad:
                    p.grad = g
        for name, b in self._buffers.items():
            if b is not None:
                self._buffers[name] = fn(b)
        return self

    def to(self, *args, **kwargs) -> "Module":
        """``to(device)``, ``to(dtype)``, ``to(device, dtype)``, ``to(tensor)``: moves and/or casts
        the parameters and buffers in place (a dtype applies to floating-point ones only, as in
        PyTorch). Returns self."""
        device, dtype, non_blocking = None, kwargs.pop("dtype", None), kwargs.pop("non_blocking", False)
        device = kwargs.pop("device", None)
        kwargs.pop("memory_format", None)
        if kwargs:
            raise TypeError(f"to() got unexpected keyword arguments {sorted(kwargs)}")
        device, dtype, non_blocking = to_args(args, device, dtype, non_blocking)
        if dtype is not None:
            dtype = D.to_dtype(dtype)
            if not dtype.is_floating_point:
                raise TypeError(f"nn.Module.to only accepts floating point dtypes, but got desired dtype={dtype}")
        if device is not None:
            device = Device(device) if not isinstance(device, int) else Device("cuda", device)

        def convert(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype if t.dtype.is_floating_point else None,
                        non_blocking=non_blocking)
        return self._apply(convert)

    def cuda(self, device=None) -> "Module":
        """Move every parameter and buffer to a cuda device. Returns self."""
        return self._apply(lambda t: t.cuda(device))

    def cpu(self) -> "Module":
        return self._apply(lambda t: t.cpu())

    def type(self, dst_type) -> "Module":
        return self._apply(lambda t: t.to(dst_type))

    def float(self) -> "Module":
        """Cast floating-point parameters and buffers to float32. Returns self."""
        return self._apply(lambda t: t.float() if t.dtype.is_floating_point else t)

    def double(self) -> "Module":
        return self._apply(lambda t: t.double() if t.dtype.is_floating_point else t)

    def half(self) -> "Module":
        return self._apply(lambda t: t.half() if t.dtype.is_floating_point else t)

    def bfloat16(self) -> "Module":
        return self._apply(lambda t: t.bfloat16() if t.dtype.is_floating_point else t)

    # ---- printing -----------------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The text inside this module's parentheses in ``repr`` (layers override it)."""
        return ""

    def _get_name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        extra = self.extra_repr()
        lines = extra.split("\n") if extra else []
        for key, module in self._modules.items():
            lines.append(f"({key}): " + _addindent(repr(module), 2))
        body = self._get_name() + "("
        if lines:
            if len(lines) == 1 and not self._modules:
                body += lines[0]
            else:
                body += "\n  " + "\n  ".join(lines) + "\n"
        return body + ")"

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_backward_pre_hooks", OrderedDict())     # pickled before backward hooks existed
        self.__dict__.setdefault("_backward_hooks", OrderedDict())

    def share_memory(self) -> "Module":
        return self


def _set_data(p: Tensor, new: Tensor) -> None:
    """Point tensor ``p`` at ``new``'s memory, dtype and layout (PyTorch's ``p.data = new``)."""
    p._storage, p._offset, p._shape, p._strides, p.dtype = new._storage, new._offset, new._shape, new._strides, new.dtype
    p._contig = p._array = None


# ---- backward hooks -------------------------------------------------------------------------------------
class BackwardHookFunction(Function):
    """Identity on a module call's Tensor inputs (or outputs): its node is where the module's
    backward hooks run, with all the gradients of those tensors at once (PyTorch's
    ``nn.modules._functions.BackwardHookFunction``)."""

    @staticmethod
    def forward(ctx, hook: "_BackwardHook", outputs: bool, *tensors):
        ctx.hook, ctx.outputs = hook, outputs
        ctx.mark_non_differentiable(*[t for t in tensors if not t._requires_grad])
        if outputs:
            ctx.set_materialize_grads(False)    # an output that got no gradient: None in grad_output (PyTorch)
        return tensors

    @staticmethod
    def backward(ctx, *grads):
        h = ctx.hook
        return (None, None) + (h.grad_outputs_ready(grads) if ctx.outputs else h.grad_inputs_ready(grads))


# the aliases' history would go around the hooks, so they refuse in-place writes (as PyTorch)
BackwardHookFunction._node_class._inplace_error = (
    "a module's input or output that its backward hooks watch (grad_fn BackwardHookFunctionBackward) is "
    "being modified in place; clone it first (x = x.clone()), or use the layer's inplace=False")


class _BackwardHook:
    """The backward hooks of one module call (PyTorch's ``utils.hooks.BackwardHook``).

    The Tensor inputs go through a ``BackwardHookFunction`` before ``forward`` and the Tensor
    outputs through another after it. Backward reaches the outputs' node first: it runs the
    pre-hooks and keeps ``grad_output``; then the inputs' node runs the hooks with both. A
    gradient reaching the inputs' node without passing the outputs' (the second backward of
    a double backward) passes through without calling them, as in PyTorch."""

    def __init__(self, module: Module, hooks: list, pre_hooks: list):
        self.module, self.hooks, self.pre_hooks = module, hooks, pre_hooks
        self.n_inputs = self.n_outputs = 0
        self.input_index = self.output_index = None     # positions of the wrapped tensors; None: none wrapped
        self.grad_outputs = None

    @staticmethod
    def _wrap(values: tuple, outputs: bool, hook) -> tuple[tuple, list | None]:
        index = [i for i, v in enumerate(values) if isinstance(v, Tensor)]
        if not (state.enabled and any(values[i]._requires_grad for i in index)):
            return values, None
        new = list(values)
        for i, t in zip(index, BackwardHookFunction.apply(hook, outputs, *[values[i] for i in index])):
            new[i] = t
        return tuple(new), index

    def wrap_inputs(self, args: tuple) -> tuple:
        self.n_inputs = len(args)
        args, self.input_index = self._wrap(args, False, self)
        return args

    def wrap_outputs(self, result):
        if isinstance(result, Tensor):
            self.n_outputs = 1
            (result,), self.output_index = self._wrap((result,), True, self)
            return result
        if not isinstance(result, tuple):
            warnings.warn(f"For backward hooks to be called, module output should be a Tensor or a tuple of Tensors "
                          f"but received {type(result)}", stacklevel=3)
            return result
        self.n_outputs = len(result)
        result, self.output_index = self._wrap(result, True, self)
        return result

    @staticmethod
    def _scatter(index: list, values, n: int) -> tuple:
        full = [None] * n
        for i, v in zip(index, values):
            full[i] = v
        return tuple(full)

    def grad_outputs_ready(self, grads: tuple) -> tuple:
        go = self._scatter(self.output_index, grads, self.n_outputs)
        for hook in self.pre_hooks:
            r = hook(self.module, go)
            if r is not None:
                if len(r) != len(go):
                    raise RuntimeError(f"Backward pre hook returned an invalid number of grad_output, got {len(r)}, "
                                       f"but expected {len(go)}")
                go = tuple(r)
        if self.input_index is None:        # no input requires grad: the hooks run now (PyTorch does, and warns)
            if self.hooks:
                warnings.warn("Full backward hook is firing when gradients are computed with respect to module "
                              "outputs since no inputs require gradients.", stacklevel=2)
            gi = (None,) * self.n_inputs
            for hook in self.hooks:
                r = hook(self.module, gi, go)
                if r is not None and not all(g is None for g in r):
                    raise RuntimeError("Backward hook for Modules where no input requires gradient should always "
                                       "return None or None for all gradients.")
        else:
            self.grad_outputs = go
        return tuple(go[i] for i in self.output_index)

    def grad_inputs_ready(self, grads: tuple) -> tuple:
        go, self.grad_outputs = self.grad_outputs, None
        if go is None:
            return grads
        gi = self._scatter(self.input_index, grads, self.n_inputs)
        for hook in self.hooks:
            r = hook(self.module, gi, go)
            if r is not None:
                if len(r) != len(gi):
                    raise RuntimeError(f"Backward hook returned an invalid number of grad_input, got {len(r)}, "
                                       f"but expected {len(gi)}")
                gi = tuple(r)
        return tuple(gi[i] for i in self.input_index)


# global hooks (nn.modules.module.register_module_forward_hook etc. in PyTorch): they run before the module's own
_global_forward_pre_hooks: OrderedDict = OrderedDict()
_global_forward_hooks: OrderedDict = OrderedDict()
_global_backward_pre_hooks: OrderedDict = OrderedDict()
_global_backward_hooks: OrderedDict = OrderedDict()


def _global_hooks_active() -> bool:
    return bool(_global_forward_pre_hooks or _global_forward_hooks or _global_backward_pre_hooks
                or _global_backward_hooks)


def register_module_forward_pre_hook(hook: Callable) -> RemovableHandle:
    """``hook(module, args)`` before every module's forward."""
    handle = RemovableHandle(_global_forward_pre_hooks)
    _global_forward_pre_hooks[handle.id] = hook
    return handle


def register_module_forward_hook(hook: Callable) -> RemovableHandle:
    """``hook(module, args, output)`` after every module's forward."""
    handle = RemovableHandle(_global_forward_hooks)
    _global_forward_hooks[handle.id] = hook
    return handle


def register_module_full_backward_pre_hook(hook: Callable) -> RemovableHandle:
    """``hook(module, grad_output)`` in every module's backward (see ``Module.register_full_backward_pre_hook``)."""
    handle = RemovableHandle(_global_backward_pre_hooks)
    _global_backward_pre_hooks[handle.id] = hook
    return handle


def register_module_full_backward_hook(hook: Callable) -> RemovableHandle:
    """``hook(module, grad_input, grad_output)`` in every module's backward (see
    ``Module.register_full_backward_hook``)."""
    handle = RemovableHandle(_global_backward_hooks)
    _global_backward_hooks[handle.id] = hook
    return handle


def register_module_backward_hook(hook: Callable) -> RemovableHandle:
    """Deprecated: runs as ``register_module_full_backward_hook`` (see ``Module.register_backward_hook``)."""
    warnings.warn("register_module_backward_hook is deprecated; tensorkit runs it as "
                  "register_module_full_backward_hook. Use that.", DeprecationWarning, stacklevel=2)
    return register_module_full_backward_hook(hook)
