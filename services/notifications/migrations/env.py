from crmkit.migrations import run_env
from services.notifications.db import Base

run_env(Base.metadata)
