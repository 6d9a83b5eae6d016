/* Operations common to every stripe source. */
#include "stripe/source.h"

#include <stddef.h>

void ub_source_close(struct ub_source *s)
{
	if (s)
		s->ops->close(s);
}
