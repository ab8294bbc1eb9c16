from mlsup.service.registry import Registry as Registry
