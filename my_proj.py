

import time as _time
class KbSlow(Kb):
    @wb.on("MemoryAccessed")
    def accessed(self, event, tables):
        _time.sleep(0.0005)
        super().accessed(event, tables)
